"""The dashboard (`/ui`): pages over the API the service already serves, drawn with
libraries from the npm registry (`make web`), live through `/v1/stream`."""

"""The workflows opendoctor ships: copy one, change it, add it under your own name."""

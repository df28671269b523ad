"""Wiring: which blocks a process runs (`service`: the roles, start and stop), the HTTP
server around the API (`server`), and a scaled-out deployment on one machine
(`cluster`)."""

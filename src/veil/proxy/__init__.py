"""The enforcing reverse proxy: ASGI apps (proxy and admin), the upstream client, enforcement."""

"""The REST API, Server-Sent Events and the built-in big screen (docs/api.md)."""

"""rtk-archive: archive Cloudflare RealtimeKit recordings to storage you own."""

__version__ = "0.1.0"

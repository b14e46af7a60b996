"""The Textual TUI: a client of the daemon over its asyncio RPC client. `p2pid` with no command."""

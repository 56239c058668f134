"""The media library: an item per media result, share links, search, and render (docs/library.md)."""

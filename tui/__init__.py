"""tuneforge terminal UI (Textual). Reads run directories; never trains in-process."""

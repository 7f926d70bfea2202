"""One module per screen: the five wizard steps, the runs table, the monitor, help and dialogs."""

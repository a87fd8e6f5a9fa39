"""Plugins: the hook specifications, what plugins declare, the checks of those
declarations, the manager that loads them, and the scaffold for a new one."""

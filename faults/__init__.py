"""The fault suite: real worker processes, injected faults, and a checker."""

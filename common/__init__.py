"""The floor every layer stands on: the one user-facing error type, files written at once, and the one
registry mechanism. It imports nothing of ours, so benchmark/, methods/ and tasks/ may all use it."""

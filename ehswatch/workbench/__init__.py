"""The workbench at `/app/`: pages for the people in the loop, from a phone (docs/workbench.md)."""

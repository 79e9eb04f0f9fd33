"""The seed documents' snippets (SPEC §17), taken from ../shared/seeds at test time and run."""

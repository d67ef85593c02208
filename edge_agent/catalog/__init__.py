"""The site's data catalog: datasets in a local SQLite file that never leaves the site."""

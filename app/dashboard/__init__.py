"""The admin dashboard: one HTML page, one script and one stylesheet, served from the package."""

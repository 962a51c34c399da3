"""The example project's own acceleration code (what accelgate gates)."""

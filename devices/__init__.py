"""Device drivers behind small interfaces, each with a simulator. No Qt."""

"""In-process runtimes: CPU work in worker threads, models loaded lazily, bounded queues."""

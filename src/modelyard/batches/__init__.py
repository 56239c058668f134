"""OpenAI batches: an input file's lines run as jobs on the queue, through the call path, into output files."""

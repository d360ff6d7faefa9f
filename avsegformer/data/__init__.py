"""AVSBench and user datasets, the clip mapper and the audio front end."""

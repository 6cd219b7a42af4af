from sam3_client.cli import entry_point

entry_point()

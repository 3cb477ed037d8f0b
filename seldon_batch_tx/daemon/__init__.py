"""The watch-directory daemon: filesystem rules and the service that runs files."""

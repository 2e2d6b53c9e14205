"""The window client, `parkgate pos`: scriptable commands and the interactive window screen."""

"""What mmbake's tools share, found beside them on ``sys.path``."""

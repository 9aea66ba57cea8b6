"""C sources that run inside the compiled program (controller, .npy I/O), shipped as package data."""

from pathlib import Path

SOURCE_DIR = Path(__file__).parent
CONTROLLER_SOURCES = ["controller.c", "npy.c", "fi_runtime.c", "campaign_server.c"]

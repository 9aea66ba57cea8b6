"""C sources that run inside the compiled program (controller, .npy I/O), shipped as package data."""

from pathlib import Path

SOURCE_DIR = Path(__file__).parent
CONTROLLER_SOURCES = ["controller.c", "npy.c", "fi_runtime.c", "trial_protocol.c", "campaign_server.c",
                      "walk_server.c", "boundaries.c", "memory_faults.c", "trial_heap.c"]
# C/C++ programs: their own main is renamed lltfi_program_main and this driver takes its place.
PROGRAM_SOURCES = ["fi_runtime.c", "trial_protocol.c", "program_driver.c", "trial_heap.c"]

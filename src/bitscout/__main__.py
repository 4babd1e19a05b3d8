from bitscout.cli import run

run()

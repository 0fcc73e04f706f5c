from lmod_tracker.cli import main

main()

from loradyn.cli import main

main()

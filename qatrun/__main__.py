from qatrun.cli import main

main()

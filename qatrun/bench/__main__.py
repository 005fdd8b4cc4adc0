from qatrun.bench.cli import main

main()

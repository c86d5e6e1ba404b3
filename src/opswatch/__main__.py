from opswatch.cli import main

main()

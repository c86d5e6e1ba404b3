from opswatch.cli.main import main

main()

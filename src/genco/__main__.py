from genco.cli import main

main()

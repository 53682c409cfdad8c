from dwcp.cli import main

main()

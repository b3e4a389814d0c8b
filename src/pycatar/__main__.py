from pycatar.cli import main

main()

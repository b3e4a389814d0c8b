from pycatar.cli import console

console()

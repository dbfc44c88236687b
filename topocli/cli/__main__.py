from topocli.cli.app import entry

entry()

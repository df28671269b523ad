from opendoctor.cli import main

main()

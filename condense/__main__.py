from condense.cli import main

if __name__ == "__main__":  # importing the module (pkgutil.walk_packages, doc builders) must not run the CLI
    main()

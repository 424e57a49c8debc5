from gilbench.cli import main

raise SystemExit(main())

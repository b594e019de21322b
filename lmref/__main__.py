from lmref.cli import main

raise SystemExit(main())

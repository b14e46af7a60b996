from p2pid.cli import main

raise SystemExit(main())

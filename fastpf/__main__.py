from fastpf.cli import main

raise SystemExit(main())

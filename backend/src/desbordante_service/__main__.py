from desbordante_service.cli import main

raise SystemExit(main())

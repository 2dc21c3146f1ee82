"""``python -m keras_tlft`` runs the CLI."""

from keras_tlft.cli import main

raise SystemExit(main())

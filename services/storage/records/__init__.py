"""Storage backends as records: what each kind accepts (``config``), the admin API's records (``admin``), the check a
record passes before it is saved (``probe``), and the ``registry`` that builds the default backend and every
record's backend."""

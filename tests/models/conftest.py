from tests.loading.conftest import user_net  # noqa: F401  (the user-model file, shared with tests/loading)

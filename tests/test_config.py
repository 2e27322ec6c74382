from pathlib import Path

from expediente.config import load_settings


def test_defaults_file_then_environment(tmp_path: Path, monkeypatch):
    for name in ("EXPEDIENTE_PORT", "EXPEDIENTE_DATA_DIR", "EXPEDIENTE_DATABASE_URL", "EXPEDIENTE_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "expediente.toml"
    config.write_text('port = 9000\nworkers = 3\ndata_dir = "/srv/expediente"\n')
    monkeypatch.setenv("EXPEDIENTE_CONFIG", str(config))
    monkeypatch.setenv("EXPEDIENTE_PORT", "9100")
    s = load_settings()
    assert s.port == 9100 and s.workers == 3 and s.data_dir == Path("/srv/expediente")
    assert s.sqlalchemy_url == "sqlite:////srv/expediente/expediente.db"


def test_postgres_urls_use_psycopg3(monkeypatch):
    monkeypatch.setenv("EXPEDIENTE_DATABASE_URL", "postgresql://expediente@db:5432/expediente")
    s = load_settings(config_file="/nonexistent.toml")
    assert s.sqlalchemy_url == "postgresql+psycopg://expediente@db:5432/expediente" and not s.is_sqlite

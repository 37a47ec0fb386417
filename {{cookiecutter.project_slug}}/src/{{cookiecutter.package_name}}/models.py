"""Your own database tables. ``alembic revision --autogenerate`` compares this MetaData with the
database and writes the difference to ``alembic/versions/`` (see README.md, "Your own tables").

    widgets = Table("widgets", metadata, Column("id", Integer, primary_key=True), Column("name", String(80)))

ORM models work too: ``class Base(DeclarativeBase): metadata = metadata``. mcp_auth's tables are
not here (they have their own migrations); the server only reads this module if your code imports it.
"""

from sqlalchemy import MetaData

# Named constraints, so later migrations can alter or drop them on every database.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

"""Every module that defines tables, imported so ``SQLModel.metadata`` holds the whole schema:
Alembic's environment and the drift test read it from here. A new table module is added here."""

import models.aggregate_records
import models.arm_decisions
import models.assign_records
import models.customer_data
import models.delivery
import models.dispatch_records
import models.imports.tables
import models.records
import models.risk_tables  # noqa: F401

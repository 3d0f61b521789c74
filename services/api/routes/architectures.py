from fastapi import APIRouter

from services.api.auth import Authenticated
from services.api.models import ArchitectureOut
from shared.catalogue import ARCHITECTURES

router = APIRouter(prefix="/v1/architectures", tags=["architectures"])


@router.get("")
async def list_architectures(caller: Authenticated) -> list[ArchitectureOut]:
    """Architectures a run can train (any valid key may read the catalogue)."""
    return [ArchitectureOut.model_validate(a.model_dump()) for a in ARCHITECTURES.values()]

import pytest

from facility.twin import Scenario, Twin, synthetic_facility


@pytest.fixture
def small_site() -> dict:
    """Demo-shaped: an air hall (2 racks x 2 nodes) and a liquid hall (2 racks x 2 nodes)."""
    return synthetic_facility(air_racks=2, air_nodes_per_rack=2, liquid_racks=2, liquid_nodes_per_rack=2)


@pytest.fixture
def make_twin(small_site):
    def make(profile="seed", site=None, **scenario):
        scenario.setdefault("outdoor", (25.0, 18.0))
        return Twin(site or small_site, profile, Scenario(**scenario))

    return make

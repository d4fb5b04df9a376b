//! Customer surveys: about 2% of baskets lead to a response within two days, rated from the
//! store's own mix (some stores please their customers more than others).

use rand_chacha::ChaCha8Rng;
use rxcube_model::domain::RATINGS;

use crate::GenError;
use crate::records::SurveyRow;
use crate::seed::{self, Purpose};
use crate::store_day::StoreDay;
use crate::writer::EventFiles;

/// Share of baskets whose customer answers the survey.
pub(crate) const SURVEY_RATE: f64 = 0.02;
/// Bits of the per-store-day response sequence in a response id.
const SEQ_BITS: u32 = 20;

/// The survey responses of one store-day.
pub(crate) struct Surveys {
    rng: ChaCha8Rng,
    first_id: i64,
    responses: i64,
}

impl Surveys {
    pub(crate) fn new(sd: &StoreDay<'_>) -> Self {
        let chain = sd.chain;
        let store_day = sd.day * i64::from(chain.pharmacies) + i64::from(sd.store.id) - 1;
        Surveys {
            rng: seed::stream(chain.seed, Purpose::Surveys, sd.store.id, sd.day),
            first_id: (store_day << SEQ_BITS) + 1,
            responses: 0,
        }
    }

    /// Maybe records a response to the basket sold at `sold` (UTC seconds).
    pub(crate) fn after_basket(
        &mut self,
        sd: &StoreDay<'_>,
        out: &mut EventFiles,
        sold: i64,
    ) -> Result<(), GenError> {
        if !seed::chance(&mut self.rng, SURVEY_RATE) {
            return Ok(());
        }
        let responded = sold + seed::between(&mut self.rng, 30 * 60, 48 * 3600);
        let rating = seed::weighted(&mut self.rng, &sd.store.profile.ratings);
        let row = SurveyRow {
            response_id: self.first_id + self.responses,
            pharmacy_id: sd.store.id as i32,
            responded_at: sd.clock.stamp(responded),
            rating: RATINGS[rating % RATINGS.len()],
        };
        self.responses += 1;
        out.surveys.write(&row)
    }
}

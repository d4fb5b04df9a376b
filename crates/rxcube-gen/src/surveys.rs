//! Customer surveys: about 2% of baskets lead to a response within two days, rated from the
//! store's own mix (some stores please their customers more than others). Responses come by
//! phone (ids `S000042`) or, for about a third, from the web survey (UUID-shaped ids).

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rxcube_model::domain::RATINGS;

use crate::GenError;
use crate::ids;
use crate::records::SurveyRow;
use crate::seed::{self, Purpose};
use crate::store_day::StoreDay;
use crate::writer::EventFiles;

/// Share of baskets whose customer answers the survey.
pub(crate) const SURVEY_RATE: f64 = 0.02;
/// Share of responses that come from the web survey.
const WEB_SHARE: f64 = 0.35;

/// The survey responses of one store-day.
pub(crate) struct Surveys {
    rng: ChaCha8Rng,
    seed: u64,
    /// Day index × pharmacies + store index: unique to the store-day.
    store_day: u64,
    responses: u64,
}

impl Surveys {
    pub(crate) fn new(sd: &StoreDay<'_>) -> Self {
        let chain = sd.chain;
        // Store-days are in the range (day index >= 0).
        let day = sd.day.max(0) as u64;
        Surveys {
            rng: seed::stream(chain.seed, Purpose::Surveys, sd.store.id, sd.day),
            seed: chain.seed,
            store_day: day * u64::from(chain.pharmacies) + u64::from(sd.store.id) - 1,
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
        let response_id = if seed::chance(&mut self.rng, WEB_SHARE) {
            let random = self.rng.random::<u64>();
            ids::web_response(self.seed, self.store_day, self.responses, random)
        } else {
            ids::phone_response(self.store_day, self.responses)
        };
        let row = SurveyRow {
            response_id,
            pharmacy_id: sd.store.label,
            responded_at: sd.clock.stamp(responded),
            rating: RATINGS[rating % RATINGS.len()],
        };
        self.responses += 1;
        out.surveys.write(&row)
    }
}

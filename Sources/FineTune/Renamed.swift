// The trainers and their configurations follow one pattern, <Method>Trainer with <Method>Config; the names
// they had before, for code written against them.

@available(*, deprecated, renamed: "FineTuneTrainer")
public typealias FineTuner = FineTuneTrainer
@available(*, deprecated, renamed: "PretrainTrainer")
public typealias Pretrainer = PretrainTrainer
@available(*, deprecated, renamed: "PretrainConfig")
public typealias PretrainOptions = PretrainConfig
@available(*, deprecated, renamed: "StableConfig")
public typealias StableOptions = StableConfig
@available(*, deprecated, renamed: "FineTuneState")
public typealias TrainerState = FineTuneState

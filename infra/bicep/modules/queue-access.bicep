// Role assignments scoped to one queue, so an identity reaches the lakevault queues and no
// other queue of the account.

@description('Storage account holding the queue.')
param accountName string

param queueName string

@description('[{ principalId, role }: role is a role definition name (GUID)]')
param grants array

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: accountName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource queue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: queueName
}

resource roles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for grant in grants: {
    scope: queue
    name: guid(queue.id, grant.principalId, grant.role)
    properties: {
      principalId: grant.principalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', grant.role)
    }
  }
]
